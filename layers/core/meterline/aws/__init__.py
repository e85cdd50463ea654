"""Adapters for the AWS services other than DynamoDB: KMS (signing secrets), EventBridge Scheduler
(report schedules) and SQS (export requests and webhook deliveries). Clients are made on first use."""
