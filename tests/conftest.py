import os

# The SDK is only our reference encoder; its v2 deprecation banner is noise in test output.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
