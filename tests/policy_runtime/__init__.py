"""The APIM policy runtime for the tests: C# context stubs, a gateway emulator and its Python driver (runtime.py)."""
