"""The bypass suite: named end-to-end attempts to get a call past Aegis (docs/security.md)."""
