"""Shared runtime: settings, topics, codec, bus, Redis store, web app factory, metrics, artifacts."""
