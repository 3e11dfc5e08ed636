# Finds quarry's dependencies and fails with a message that says how to get each one.
# Results: PkgConfig::SQLITE3, PkgConfig::LIBCURL, PkgConfig::JANSSON, PkgConfig::MHD, PkgConfig::CJOSE
# (libcjose, MIT: JOSE signatures of OpenID Connect tokens),
# quarry::ldap, OpenSSL::Crypto, quarry::faiss (FAISS_VERSION, FAISS_OPT_LEVEL), QUARRY_WITH_CUDA.

find_package(PkgConfig REQUIRED)
set(_quarry_hint "run scripts/bootstrap (as root it installs the Debian packages; otherwise it prints the apt command)")

foreach(dep "SQLITE3 sqlite3" "LIBCURL libcurl" "JANSSON jansson" "MHD libmicrohttpd" "CJOSE cjose")
  string(REPLACE " " ";" dep "${dep}")
  list(GET dep 0 var)
  list(GET dep 1 module)
  pkg_check_modules(${var} IMPORTED_TARGET ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "quarry needs ${module} (pkg-config module '${module}' not found): ${_quarry_hint}")
  endif()
endforeach()

# OpenLDAP has no pkg-config file on Debian 12.
find_path(LDAP_INCLUDE_DIR ldap.h)
find_library(LDAP_LIBRARY ldap)
find_library(LBER_LIBRARY lber)
if(NOT LDAP_INCLUDE_DIR OR NOT LDAP_LIBRARY OR NOT LBER_LIBRARY)
  message(FATAL_ERROR "quarry needs the OpenLDAP client library (libldap-dev): ${_quarry_hint}")
endif()
add_library(quarry::ldap INTERFACE IMPORTED)
target_include_directories(quarry::ldap INTERFACE ${LDAP_INCLUDE_DIR})
target_link_libraries(quarry::ldap INTERFACE ${LDAP_LIBRARY} ${LBER_LIBRARY})

# libcrypto: HMAC-SHA256 for tokens, SHA-256 for API keys, random bytes, constant-time compares.
find_package(OpenSSL)
if(NOT OPENSSL_FOUND OR NOT TARGET OpenSSL::Crypto)
  message(FATAL_ERROR "quarry needs OpenSSL's libcrypto (libssl-dev): ${_quarry_hint}")
endif()

# --- SQLite must have FTS5 ---------------------------------------------------------------------
set(_fts5_src ${CMAKE_BINARY_DIR}/CMakeFiles/quarry_fts5_check.c)
file(WRITE ${_fts5_src} [=[
#include <sqlite3.h>
#include <stdio.h>
int main(void)
{
    sqlite3 *db;
    char *msg = NULL;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        return 2;
    if (sqlite3_exec(db, "CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61');"
                         "INSERT INTO t VALUES('hello world');", NULL, NULL, &msg) != SQLITE_OK) {
        printf("%s", msg ? msg : "unknown error");
        return 1;
    }
    sqlite3_close(db);
    return 0;
}
]=])
try_run(_fts5_run _fts5_compile ${CMAKE_BINARY_DIR}/fts5_check ${_fts5_src}
  CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${SQLITE3_INCLUDE_DIRS}"
  LINK_LIBRARIES ${SQLITE3_LINK_LIBRARIES}
  COMPILE_OUTPUT_VARIABLE _fts5_compile_out
  RUN_OUTPUT_VARIABLE _fts5_out)
if(NOT _fts5_compile)
  message(FATAL_ERROR "cannot compile the SQLite FTS5 check against ${SQLITE3_LINK_LIBRARIES}:\n${_fts5_compile_out}")
endif()
if(NOT _fts5_run EQUAL 0)
  message(FATAL_ERROR "the SQLite library in use (${SQLITE3_LINK_LIBRARIES}, ${SQLITE3_VERSION}) has no FTS5: ${_fts5_out}\n"
    "quarry needs SQLite built with SQLITE_ENABLE_FTS5 (Debian's libsqlite3-dev has it).")
endif()
message(STATUS "SQLite ${SQLITE3_VERSION} has FTS5")

# --- FAISS (built by scripts/bootstrap with the C API) -----------------------------------------
if(NOT DEFINED FAISS_ROOT AND DEFINED ENV{FAISS_ROOT})
  set(FAISS_ROOT $ENV{FAISS_ROOT})
endif()
if(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
  set(_cache $ENV{XDG_CACHE_HOME})
else()
  set(_cache $ENV{HOME}/.cache)
endif()
set(_faiss_hints ${FAISS_ROOT} $ENV{QUARRY_FAISS_PREFIX}
  ${_cache}/quarry/faiss-1.7.3-avx2 ${_cache}/quarry/faiss-1.7.3-generic)
find_path(FAISS_INCLUDE_DIR faiss/c_api/Index_c.h HINTS ${_faiss_hints} PATH_SUFFIXES include NO_DEFAULT_PATH)
find_library(FAISS_C_LIBRARY NAMES faiss_c HINTS ${_faiss_hints} PATH_SUFFIXES lib NO_DEFAULT_PATH)
find_library(FAISS_LIBRARY NAMES faiss_avx2 faiss HINTS ${_faiss_hints} PATH_SUFFIXES lib NO_DEFAULT_PATH)
if(NOT FAISS_INCLUDE_DIR OR NOT FAISS_C_LIBRARY OR NOT FAISS_LIBRARY)
  message(FATAL_ERROR "FAISS 1.7.3 with its C API was not found (looked in: ${_faiss_hints}).\n"
    "Run scripts/bootstrap to build it into ${_cache}/quarry, or pass -DFAISS_ROOT=PREFIX.\n"
    "Debian's libfaiss-dev does not do: it has no C API library and no AVX2.")
endif()
file(STRINGS ${FAISS_INCLUDE_DIR}/faiss/Index.h _faiss_ver REGEX "#define FAISS_VERSION_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" FAISS_VERSION "${_faiss_ver}")
if(FAISS_LIBRARY MATCHES "avx2")
  set(FAISS_OPT_LEVEL avx2)
else()
  set(FAISS_OPT_LEVEL generic)
endif()
set(BLA_VENDOR OpenBLAS)
find_package(BLAS)
find_package(LAPACK)
if(NOT BLAS_FOUND OR NOT LAPACK_FOUND)
  message(FATAL_ERROR "FAISS needs OpenBLAS (libopenblas-dev): ${_quarry_hint}")
endif()
find_package(OpenMP REQUIRED COMPONENTS CXX)
add_library(quarry::faiss INTERFACE IMPORTED)
target_include_directories(quarry::faiss INTERFACE ${FAISS_INCLUDE_DIR})
# Static archives: the C API first, then the library it calls, then what FAISS needs.
target_link_libraries(quarry::faiss INTERFACE ${FAISS_C_LIBRARY} ${FAISS_LIBRARY}
  ${LAPACK_LIBRARIES} ${BLAS_LIBRARIES} OpenMP::OpenMP_CXX stdc++ m)
message(STATUS "FAISS ${FAISS_VERSION} (${FAISS_OPT_LEVEL}): ${FAISS_C_LIBRARY}")

# --- CUDA ----------------------------------------------------------------------------------------
set(QUARRY_WITH_CUDA OFF)
string(TOUPPER "${QUARRY_CUDA}" _cuda_mode)
if(NOT _cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "QUARRY_CUDA must be AUTO, ON or OFF (got '${QUARRY_CUDA}')")
endif()
if(NOT _cuda_mode STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit QUIET)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublas)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # A100, H100/H200; PTX for newer parts.
      set(CMAKE_CUDA_ARCHITECTURES 80-real 90)
    endif()
    enable_language(CUDA)
    set(QUARRY_WITH_CUDA ON)
    message(STATUS "CUDA ${CUDAToolkit_VERSION} with cuBLAS: building the GPU path")
  elseif(_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "QUARRY_CUDA=ON but nvcc and cuBLAS were not both found (nvcc: '${CMAKE_CUDA_COMPILER}')")
  else()
    message(STATUS "CUDA not found: the GPU path is not built (QUARRY_CUDA=AUTO)")
  endif()
endif()
