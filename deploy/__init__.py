"""Runtimes for exported ACL models: sessions, engines, runners, timing."""
