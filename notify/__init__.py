"""Webhook sender: delivers job events on the notify queue."""
