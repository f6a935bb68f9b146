"""Background work: the broker, the actors, and the deployment pipeline they run."""
