"""Pure dataset model: key naming, metadata, partition values, schema rules, predicates."""
