"""Sans-IO media stack: RTP, MPEG-PS, H.264/H.265 and outputs."""
