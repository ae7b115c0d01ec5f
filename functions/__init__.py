"""Control plane: the REST API and the SQS workers, run as Lambda functions."""
