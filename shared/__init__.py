"""Code both planes import: models, DynamoDB mapping, commands/events, signer, settings. No I/O at import."""
