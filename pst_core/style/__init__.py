"""The partitioned style transfer: its objective, losses, region mapping, tiles and memory plan."""
