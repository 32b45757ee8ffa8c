"""The post: `nightear fleet`, where the units' alerts meet, and the operators' console.

The unit (detect, listen, the sinks) and the post are two programs sharing one wire schema
(`nightear.schema`). Nothing here runs on a unit; the console's web framework is the `fleet`
extra and is imported only when `fleet --http` serves the console.
"""
