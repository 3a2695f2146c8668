-- docker-compose.yml's Postgres, run once when its data directory is made:
-- the two roles kluis runs as. kluis_owner owns the database (and so the
-- public schema) and is what `kluis migrate` connects as; kluis_app owns
-- nothing and gets exactly what serving needs from `kluis migrate`.
-- Development passwords only.
CREATE ROLE kluis_owner LOGIN PASSWORD 'kluis-owner';
CREATE ROLE kluis_app LOGIN PASSWORD 'kluis-app';
CREATE DATABASE kluis OWNER kluis_owner;
