"""End to end: real NATS, real yt-dlp on a local HTTP server, real ffmpeg, Debian's Chromium. Minutes."""
