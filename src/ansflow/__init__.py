"""AnsFlow: an asyncio-native CI/CD pipeline execution engine."""

__version__ = "0.1.0"
