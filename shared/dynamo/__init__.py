"""DynamoDB single-table mapping and the repositories that use it."""
