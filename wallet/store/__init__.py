"""Queries. Every function takes `session` keyword-only and flushes, never commits."""
