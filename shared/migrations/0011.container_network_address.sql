-- depends: 0010.container_secret_names
-- Where a running container is reached on its tenant's private network (the worker writes it once the container
-- runs): the internal DNS answers with it; lb-runtime keeps using the published host port.
ALTER TABLE containers ADD COLUMN network_address text;
