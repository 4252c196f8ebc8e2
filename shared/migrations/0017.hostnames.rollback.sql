DROP TABLE hostnames;
