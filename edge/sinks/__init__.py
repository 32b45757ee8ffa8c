"""Where events go once decided: the durable store first, then the rest."""
