DROP TABLE registry_counter;
DROP TABLE registry_service_index;
DROP TABLE registry_instances;
