"""The REST API: one Starlette app, served by Mangum on Lambda and by uvicorn locally."""
