"""The scan engine: walk paths, sniff formats by content, run readers and analysis, build reports."""
