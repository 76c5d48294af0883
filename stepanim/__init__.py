"""What the API, render worker, encoder and notify worker share: job model, settings,
job store (Redis), storage, queues, lifecycle and webhooks. Imports neither FastAPI nor torch."""
