"""The operators' console: one web page for the fleet, served by `nightear fleet --http`.

Live alerts (server-sent events) with an audible cue, each event's clip and spectrogram, a
verdict that exports as a training folder, unit health, and a plan view drawn in metres
without map tiles. Every asset is served from this package (no CDN, no external font). Its
web framework (bottle) and password hashing (argon2-cffi) are the `fleet` extra.
"""
