"""Pure tensor transforms, no file I/O: indices, time grid, sampling, series, recurrence plots."""
