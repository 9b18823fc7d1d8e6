"""The API's routes, one controller per concern: jobs (commands and reads), streams (SSE), media, health, page."""
