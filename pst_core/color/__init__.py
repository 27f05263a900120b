"""Colour: colour spaces, and the colour normalisation of a pair and its inverse."""
