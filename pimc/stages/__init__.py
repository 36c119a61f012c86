"""One module per DVC stage, named as the stage; each reads and writes the stage's files."""
