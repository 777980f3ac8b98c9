"""Analysis: the symbolic pickle machine, policy and findings."""
