"""The benchmark behind `pokedge bench`: stage timings, throughput, search scaling and cold start.

Each module measures one thing and returns plain dicts; `runner` puts them
together into the JSON object and `report` formats the table.
"""
