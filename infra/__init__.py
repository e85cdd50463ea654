"""Meterline's infrastructure as CDK: the `Meterline` construct and the app that deploys it."""
