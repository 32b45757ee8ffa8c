"""Where events go once decided: the durable store first, then the rest."""

# Recordings of the night are private: every sink creates its files 0640 and folders 0750
# (group: the service's, or node_exporter's for the metrics folder), never world-readable.
PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE = 0o640, 0o750
