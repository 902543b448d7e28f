/* cherryq Vulkan backend: the SPIR-V of shaders/<name>.comp, compiled by glslc at
 * build time (shaders/meson.build) into C initializer lists. Keep the table
 * in the order of cq_vk_shader_id and in step with shaders/meson.build. */
#include "vk_internal.h"

#define SPV(var, file) static const uint32_t var[] =
SPV(spv_copy, copy)
#include "shaders/copy.spv.h"
;
SPV(spv_eltwise, eltwise)
#include "shaders/eltwise.spv.h"
;
SPV(spv_adamw, adamw)
#include "shaders/adamw.spv.h"
;
SPV(spv_swiglu, swiglu)
#include "shaders/swiglu.spv.h"
;
SPV(spv_rmsnorm, rmsnorm)
#include "shaders/rmsnorm.spv.h"
;
SPV(spv_rope, rope)
#include "shaders/rope.spv.h"
;
SPV(spv_embed, embed)
#include "shaders/embed.spv.h"
;
SPV(spv_xent, xent)
#include "shaders/xent.spv.h"
;
SPV(spv_reduce, reduce)
#include "shaders/reduce.spv.h"
;
SPV(spv_attn, attn)
#include "shaders/attn.spv.h"
;
SPV(spv_fakequant, fakequant)
#include "shaders/fakequant.spv.h"
;
SPV(spv_matmul_nn, matmul_nn)
#include "shaders/matmul_nn.spv.h"
;
SPV(spv_matmul_tn, matmul_tn)
#include "shaders/matmul_tn.spv.h"
;
SPV(spv_matmul_nt, matmul_nt)
#include "shaders/matmul_nt.spv.h"
;
SPV(spv_matmul_tt, matmul_tt)
#include "shaders/matmul_tt.spv.h"
;
SPV(spv_qmm_gemv_b2, qmm_gemv_b2)
#include "shaders/qmm_gemv_b2.spv.h"
;
SPV(spv_qmm_gemv_b3, qmm_gemv_b3)
#include "shaders/qmm_gemv_b3.spv.h"
;
SPV(spv_qmm_gemv_b4, qmm_gemv_b4)
#include "shaders/qmm_gemv_b4.spv.h"
;
SPV(spv_qmm_gemv_b8, qmm_gemv_b8)
#include "shaders/qmm_gemv_b8.spv.h"
;
SPV(spv_qmm_gemv_sg_b2, qmm_gemv_sg_b2)
#include "shaders/qmm_gemv_sg_b2.spv.h"
;
SPV(spv_qmm_gemv_sg_b3, qmm_gemv_sg_b3)
#include "shaders/qmm_gemv_sg_b3.spv.h"
;
SPV(spv_qmm_gemv_sg_b4, qmm_gemv_sg_b4)
#include "shaders/qmm_gemv_sg_b4.spv.h"
;
SPV(spv_qmm_gemv_sg_b8, qmm_gemv_sg_b8)
#include "shaders/qmm_gemv_sg_b8.spv.h"
;
SPV(spv_qmm_gemm_b2, qmm_gemm_b2)
#include "shaders/qmm_gemm_b2.spv.h"
;
SPV(spv_qmm_gemm_b3, qmm_gemm_b3)
#include "shaders/qmm_gemm_b3.spv.h"
;
SPV(spv_qmm_gemm_b4, qmm_gemm_b4)
#include "shaders/qmm_gemm_b4.spv.h"
;
SPV(spv_qmm_gemm_b8, qmm_gemm_b8)
#include "shaders/qmm_gemm_b8.spv.h"
;

#define E(id, var, wg, sg) [id] = { #var, var, sizeof var, wg, sg }
static const cq_vk_shader k_shaders[CQ_VK_SH_COUNT] = {
    E(CQ_VK_SH_COPY, spv_copy, 64, false),
    E(CQ_VK_SH_ELTWISE, spv_eltwise, 64, false),
    E(CQ_VK_SH_ADAMW, spv_adamw, 64, false),
    E(CQ_VK_SH_SWIGLU, spv_swiglu, 64, false),
    E(CQ_VK_SH_RMSNORM, spv_rmsnorm, 64, false),
    E(CQ_VK_SH_ROPE, spv_rope, 64, false),
    E(CQ_VK_SH_EMBED, spv_embed, 64, false),
    E(CQ_VK_SH_XENT, spv_xent, 64, false),
    E(CQ_VK_SH_REDUCE, spv_reduce, 64, false),
    E(CQ_VK_SH_ATTN, spv_attn, 64, false),          /* fixed: the shader assumes 64 */
    E(CQ_VK_SH_FAKEQUANT, spv_fakequant, 64, false),
    E(CQ_VK_SH_MATMUL_NN, spv_matmul_nn, 256, false), /* fixed: 16x16 threads, 4x4 each */
    E(CQ_VK_SH_MATMUL_TN, spv_matmul_tn, 256, false),
    E(CQ_VK_SH_MATMUL_NT, spv_matmul_nt, 256, false),
    E(CQ_VK_SH_MATMUL_TT, spv_matmul_tt, 256, false),
    E(CQ_VK_SH_QMM_GEMV_B2, spv_qmm_gemv_b2, 64, false),
    E(CQ_VK_SH_QMM_GEMV_B3, spv_qmm_gemv_b3, 64, false),
    E(CQ_VK_SH_QMM_GEMV_B4, spv_qmm_gemv_b4, 64, false),
    E(CQ_VK_SH_QMM_GEMV_B8, spv_qmm_gemv_b8, 64, false),
    E(CQ_VK_SH_QMM_GEMV_SG_B2, spv_qmm_gemv_sg_b2, 64, true),
    E(CQ_VK_SH_QMM_GEMV_SG_B3, spv_qmm_gemv_sg_b3, 64, true),
    E(CQ_VK_SH_QMM_GEMV_SG_B4, spv_qmm_gemv_sg_b4, 64, true),
    E(CQ_VK_SH_QMM_GEMV_SG_B8, spv_qmm_gemv_sg_b8, 64, true),
    E(CQ_VK_SH_QMM_GEMM_B2, spv_qmm_gemm_b2, 256, false),
    E(CQ_VK_SH_QMM_GEMM_B3, spv_qmm_gemm_b3, 256, false),
    E(CQ_VK_SH_QMM_GEMM_B4, spv_qmm_gemm_b4, 256, false),
    E(CQ_VK_SH_QMM_GEMM_B8, spv_qmm_gemm_b8, 256, false),
};

const cq_vk_shader *cq_vk_shader_get(cq_vk_shader_id id)
{
    return (unsigned)id < CQ_VK_SH_COUNT ? &k_shaders[id] : NULL;
}
