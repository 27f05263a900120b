"""Looking at what a run did: exported pictures, the HTML report, figures, quality measures."""
