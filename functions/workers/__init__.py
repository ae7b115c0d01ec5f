"""SQS-triggered workers: status callbacks and edge events."""
