"""Training on a committed run: SageMaker linear-learner, or the local stand-in. No Spark."""
