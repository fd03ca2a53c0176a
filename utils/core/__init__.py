"""The method: soft gates, surrogate backward functions, call interception, pullbacks and ascent."""
