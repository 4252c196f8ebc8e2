DELETE FROM listeners WHERE protocol = 'https';
ALTER TABLE listeners DROP CONSTRAINT listeners_protocol_check;
ALTER TABLE listeners ADD CONSTRAINT listeners_protocol_check CHECK (protocol IN ('http', 'tcp'));
DROP TABLE listener_certificates;
DROP TABLE certificates;
