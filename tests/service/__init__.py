"""Services with fakes passed in (or the API and projector against one embedded NATS): no yt-dlp network run."""
