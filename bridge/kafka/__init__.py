"""The Kafka side: consumed records, the CloudEvents Kafka binding, clients, dead letters."""
