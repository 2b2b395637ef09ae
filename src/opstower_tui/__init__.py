"""OpsTower DR Console: the Textual app over opstower_core.

The console only renders what the engine reports (typed events) and runs every blocking
call in a worker thread; opstower_core never imports this package.
"""
