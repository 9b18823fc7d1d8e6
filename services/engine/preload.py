"""Imported once by the zygote the slot processes fork from (see ``zygote``): yt-dlp and this service's adapter
for it, with the URL patterns of its ~1,800 extractors compiled (~0.35 s), so every slot starts with them instead of
paying for them itself, and the modules a YoutubeDL and the generic extractor import on first use. Then the collector is told to leave these objects alone (``gc.freeze``): a collection in a
slot would otherwise write to every one of them and copy the pages the slots share with the zygote."""

import gc

from services.engine import slot_process, ytdlp  # noqa: F401 - imported to be shared

slot_process.warm_extractors()
# A YoutubeDL made and dropped here imports what making one and its generic extractor needs (~25 MB of modules that
# every slot would otherwise import for itself).
ytdlp.YtDlp(size=1).warm_up(extractors=False)
gc.collect()
gc.freeze()
