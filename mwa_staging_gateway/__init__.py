"""The HTTP gateway: the original staging service's API in front of StagingJobs."""
