"""Meterline's shared core: domain logic, storage adapters and the plumbing every Lambda shares."""
