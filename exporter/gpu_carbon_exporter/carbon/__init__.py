"""Grid carbon intensity providers behind one small interface (``base.IntensityProvider``)."""
