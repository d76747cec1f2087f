/* Stand-in for libnvinfer, libnvinfer_plugin and libnvonnxparser (TensorRT 10 and 11), so that the real
 * TensorRT Python bindings import on a machine without TensorRT: these nine C entry points are all that
 * tensorrt_bindings/tensorrt.so needs from the three libraries. Every factory returns NULL, so the
 * bindings can be inspected and constructors fail cleanly, but nothing is ever built or run. */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *library_namespace) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
