"""The webhooks core: what a target may be, how a delivery is signed and retried."""
