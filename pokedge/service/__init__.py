"""The device service behind `pokedge serve`: frame loop, card tracking, scan log, HTTP API, systemd."""
