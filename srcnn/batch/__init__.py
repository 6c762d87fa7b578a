"""Upscaling a bucket: planning shards and chunks from a streamed listing, the per-chunk job."""
