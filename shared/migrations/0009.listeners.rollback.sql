DROP TRIGGER listeners_notify ON listeners;
DROP FUNCTION notify_listeners_changed();
DROP TABLE listeners;
