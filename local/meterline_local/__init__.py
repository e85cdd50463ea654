"""The embedded local stack: the real Lambda handlers behind a local HTTP gateway, with DynamoDB and
its stream emulated in-process by moto. Never shipped to Lambda."""
