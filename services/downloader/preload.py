"""Imported once by the fork server the slot processes fork from (see ``slots``): yt-dlp, and the URL patterns of
its ~1,800 extractors compiled (~0.35 s), so every slot starts with them instead of paying for them itself."""

from services.downloader import slot_process

slot_process.warm_extractors()
