# Helpers for gka's own executables (tests, examples, benches). Not installed.

# Flags for gka's own CUDA translation units: line info for profilers, spill warnings.
function(gka_cuda_target target)
  target_link_libraries(${target} PRIVATE gka::gka CUDA::cudart_static)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xptxas=--warn-on-spills>)
  set_target_properties(${target} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
endfunction()

function(gka_cpu_target target)
  target_link_libraries(${target} PRIVATE gka::gka)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
endfunction()
