"""One module per ``aubench`` command: options in, one library call, the result rendered (Rich or JSON)."""
