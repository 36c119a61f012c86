"""Training machinery shared by pretraining and the tasks: losses, pair data, torch utilities."""
